#include "edgecompress/stats.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace ec {

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) throw std::invalid_argument("percentile of no values");
  if (!(q >= 0.0 && q <= 100.0)) throw std::invalid_argument("percentile outside [0, 100]");
  const std::size_t last = sorted.size() - 1;
  // numpy's "linear" method: virtual index (n - 1) * (q / 100), clipped to the last element.
  const double index = static_cast<double>(last) * (q / 100.0);
  if (index >= static_cast<double>(last)) return sorted[last];
  const double below = std::floor(index);
  const double fraction = index - below;
  const double a = sorted[static_cast<std::size_t>(below)];
  const double b = sorted[static_cast<std::size_t>(below) + 1];
  // numpy (>= 1.22) interpolates from the nearer neighbour: a + (b - a) * t below t = 0.5, b - (b - a) * (1 - t) from it.
  const double difference = b - a;
  return fraction >= 0.5 ? b - difference * (1.0 - fraction) : a + difference * fraction;
}

Summary summarize(std::vector<double> values) {
  if (values.empty()) throw std::invalid_argument("no timings to summarize");
  std::sort(values.begin(), values.end());
  double sum = 0.0;
  for (const double value : values) sum += value;
  return Summary{percentile(values, 50.0), percentile(values, 90.0), percentile(values, 99.0),
                 sum / static_cast<double>(values.size()), values.front(), values.back(), values.size()};
}

double throughput(std::size_t iterations, std::int64_t batch, double wall_seconds) {
  if (!(wall_seconds > 0.0)) throw std::invalid_argument("throughput of a run that took no time");
  return static_cast<double>(iterations) * static_cast<double>(batch) / wall_seconds;
}

}  // namespace ec
