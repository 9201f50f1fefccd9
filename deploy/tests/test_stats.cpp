// Percentiles against values computed with numpy 2.4 (np.percentile(x, q), default linear method).
#include <algorithm>
#include <stdexcept>

#include "check.hpp"
#include "edgecompress/stats.hpp"

namespace {

struct NumpyRow {
  std::vector<double> values;
  double p0, p25, p50, p90, p99, p100, mean;
};

// np.percentile(np.array(values), [0, 25, 50, 90, 99, 100]) and values.mean(), printed with repr().
const std::vector<NumpyRow> kNumpyTable{
    {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 1.0, 3.25, 5.5, 9.1, 9.91, 10.0, 5.5},
    {{0.31, 7.5, 2.25, 19.0, 3.125, 0.5, 11.75}, 0.31, 1.375, 3.125, 14.650000000000002, 18.564999999999998, 19.0, 6.347857142857143},
    {{4.2}, 4.2, 4.2, 4.2, 4.2, 4.2, 4.2, 4.2},
    {{2.0, 1.0}, 1.0, 1.25, 1.5, 1.9, 1.99, 2.0, 1.5},
    {{1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8, 9.9, 10.1, 0.3, 12.7, 3.9}, 0.3, 3.3, 5.5, 10.06, 12.387999999999996, 12.7, 5.884615384615385},
};

}  // namespace

EC_TEST(percentiles_equal_numpy_to_the_last_bit) {
  for (const NumpyRow& row : kNumpyTable) {
    std::vector<double> sorted = row.values;
    std::sort(sorted.begin(), sorted.end());
    EC_CHECK_EQ(ec::percentile(sorted, 0), row.p0);
    EC_CHECK_EQ(ec::percentile(sorted, 25), row.p25);
    EC_CHECK_EQ(ec::percentile(sorted, 50), row.p50);
    EC_CHECK_EQ(ec::percentile(sorted, 90), row.p90);
    EC_CHECK_EQ(ec::percentile(sorted, 99), row.p99);
    EC_CHECK_EQ(ec::percentile(sorted, 100), row.p100);
  }
}

EC_TEST(summary_of_unsorted_values) {
  for (const NumpyRow& row : kNumpyTable) {
    const ec::Summary summary = ec::summarize(row.values);
    EC_CHECK_EQ(summary.median, row.p50);
    EC_CHECK_EQ(summary.p90, row.p90);
    EC_CHECK_EQ(summary.p99, row.p99);
    EC_CHECK_NEAR(summary.mean, row.mean, 1e-12);
    EC_CHECK_EQ(summary.min, row.p0);
    EC_CHECK_EQ(summary.max, row.p100);
    EC_CHECK_EQ(summary.count, row.values.size());
  }
}

EC_TEST(no_values_and_bad_percentiles_are_refused) {
  EC_CHECK_THROWS(ec::summarize({}), std::invalid_argument, "no timings");
  EC_CHECK_THROWS(ec::percentile({1.0, 2.0}, 101), std::invalid_argument, "outside");
  EC_CHECK_THROWS(ec::percentile({1.0, 2.0}, -1), std::invalid_argument, "outside");
}

EC_TEST(throughput_counts_batch_items_per_second) {
  EC_CHECK_NEAR(ec::throughput(100, 1, 2.0), 50.0, 1e-12);
  EC_CHECK_NEAR(ec::throughput(100, 8, 2.0), 400.0, 1e-12);
  EC_CHECK_THROWS(ec::throughput(10, 1, 0.0), std::invalid_argument, "no time");
}
