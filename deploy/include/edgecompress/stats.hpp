// Latency statistics with numpy's default percentile (linear interpolation), so C++ and Python figures agree.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ec {

struct Summary {
  double median;
  double p90;
  double p99;
  double mean;
  double min;
  double max;
  std::size_t count;
};

/// np.percentile(values, q) for `sorted` values in ascending order and q in [0, 100], to the last bit:
/// virtual index (n - 1) * q / 100, then numpy's two-sided linear interpolation between its neighbours.
double percentile(const std::vector<double>& sorted, double q);

/// Median (= percentile 50), p90, p99, mean, min, max and count of `values`; std::invalid_argument when empty.
Summary summarize(std::vector<double> values);

/// Batch items per second over a timed run of `iterations` inferences of `batch` items taking `wall_seconds`.
double throughput(std::size_t iterations, std::int64_t batch, double wall_seconds);

}  // namespace ec
