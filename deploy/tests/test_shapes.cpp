// Shapes from the command line against the engine's (with -1 for dynamic dimensions).
#include "check.hpp"
#include "edgecompress/errors.hpp"
#include "edgecompress/shapes.hpp"

using ec::Shape;
using ec::UserError;

EC_TEST(parse_and_format_round_trip) {
  EC_CHECK(ec::parse_shape("--shapes x", "1x3x320x320") == (Shape{1, 3, 320, 320}));
  EC_CHECK(ec::parse_shape("--shapes x", "7") == (Shape{7}));
  EC_CHECK_EQ(ec::format_shape({1, 3, -1, -1}), "1x3x-1x-1");
  EC_CHECK_EQ(ec::format_shape({}), "scalar");
  EC_CHECK_THROWS(ec::parse_shape("--shapes x", "1x-3"), UserError, "--shapes x: '1x-3' is not a shape");
  EC_CHECK_THROWS(ec::parse_shape("--shapes x", ""), UserError, "is not a shape");
  EC_CHECK_THROWS(ec::parse_shape("--shapes x", "99999999999"), UserError, "is not a shape");
}

EC_TEST(element_count_checks_dimensions) {
  EC_CHECK_EQ(ec::element_count({1, 3, 320, 320}), 307200);
  EC_CHECK_EQ(ec::element_count({}), 1);
  EC_CHECK_THROWS(ec::element_count({1, -1}), UserError, "dimension below 1");
  EC_CHECK_THROWS(ec::element_count({1LL << 40, 1LL << 40}), UserError, "too large");
}

EC_TEST(static_inputs_keep_the_engine_shape) {
  EC_CHECK(ec::resolve_input_shape("images", {1, 3, 320, 320}, {}) == (Shape{1, 3, 320, 320}));
  EC_CHECK(ec::resolve_input_shape("images", {1, 3, 320, 320}, {{"images", {1, 3, 320, 320}}}) == (Shape{1, 3, 320, 320}));
  EC_CHECK_THROWS(ec::resolve_input_shape("images", {1, 3, 320, 320}, {{"images", {1, 3, 640, 640}}}), UserError,
                  "--shapes images:1x3x640x640 does not fit the engine's input shape 1x3x320x320");
}

EC_TEST(dynamic_inputs_need_a_fitting_shape) {
  EC_CHECK(ec::resolve_input_shape("images", {-1, 3, -1, -1}, {{"images", {4, 3, 256, 320}}}) == (Shape{4, 3, 256, 320}));
  EC_CHECK_THROWS(ec::resolve_input_shape("images", {-1, 3, -1, -1}, {}), UserError,
                  "input 'images' has the dynamic shape -1x3x-1x-1: give one with --shapes images:1x3x1x1");
  EC_CHECK_THROWS(ec::resolve_input_shape("images", {-1, 3, -1, -1}, {{"images", {1, 1, 256, 320}}}), UserError, "does not fit");
  EC_CHECK_THROWS(ec::resolve_input_shape("images", {-1, 3, -1, -1}, {{"images", {1, 3, 256}}}), UserError, "does not fit");
}

EC_TEST(names_must_be_engine_inputs) {
  ec::check_input_names("--input", {"images"}, {"images", "scale"});
  EC_CHECK_THROWS(ec::check_input_names("--shapes", {"image"}, {"images", "scale"}), UserError,
                  "--shapes names 'image', which is not an input of the engine; its inputs are 'images', 'scale'");
}
