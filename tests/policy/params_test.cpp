// Parameters checked against a schema (PolicyParams): text, typed setters, defaults.
#include <gtest/gtest.h>

#include "policy_test_util.h"

namespace kvc {
namespace {

using test::expect_error;

const kvc_param_info kSchema[] = {
    {sizeof(kvc_param_info), "size", KVC_PARAM_INT, "4", 0, 100, "", "an int"},
    {sizeof(kvc_param_info), "ratio", KVC_PARAM_FLOAT, "0.5", 0, 1, "", "a float"},
    {sizeof(kvc_param_info), "on", KVC_PARAM_BOOL, "false", 0, 0, "", "a bool"},
    {sizeof(kvc_param_info), "scope", KVC_PARAM_CHOICE, "per_head", 0, 0, "per_head|shared", ""},
    {sizeof(kvc_param_info), "layers", KVC_PARAM_INT_LIST, "0", 0, 31, "", "an int list"},
    {sizeof(kvc_param_info), "words", KVC_PARAM_STRING_LIST, "", 0, 0, "", "a string list"},
};
constexpr size_t kN = sizeof kSchema / sizeof kSchema[0];

std::unique_ptr<PolicyParams> fresh() {
  return std::make_unique<PolicyParams>(std::vector<kvc_param_info>(kSchema, kSchema + kN),
                                        "policy 'demo'");
}

std::unique_ptr<PolicyParams> parse(std::initializer_list<kvc_param> params) {
  std::vector<kvc_param> v(params);
  auto p = fresh();
  p->set_all(v.data(), v.size());
  return p;
}

TEST(PolicyParams, DefaultsFillEverySlot) {
  auto pp = fresh();
  const PolicyParams& p = *pp;
  ASSERT_EQ(p.size(), kN);
  EXPECT_EQ(p.values()[0].i, 4);
  EXPECT_DOUBLE_EQ(p.values()[1].f, 0.5);
  EXPECT_EQ(p.values()[2].i, 0);
  EXPECT_EQ(p.values()[3].i, 0);
  EXPECT_STREQ(p.values()[3].strings[0], "per_head");
  ASSERT_EQ(p.values()[4].n_ints, 1u);
  EXPECT_EQ(p.values()[4].ints[0], 0);
  EXPECT_EQ(p.values()[5].n_strings, 0u);
  for (size_t i = 0; i < kN; ++i) EXPECT_FALSE(p.is_set(i));
}

TEST(PolicyParams, ParsesEveryType) {
  auto pp = parse({{"size", " 100 "}, {"ratio", "1e-1"}, {"on", "true"},
                          {"scope", "shared"}, {"layers", "[0, 3,31]"},
                          {"words", R"(a, "b, c", " ", "\n\"x\"")"}});
  const PolicyParams& p = *pp;
  EXPECT_EQ(p.values()[0].i, 100);
  EXPECT_DOUBLE_EQ(p.values()[1].f, 0.1);
  EXPECT_EQ(p.values()[2].i, 1);
  EXPECT_EQ(p.values()[3].i, 1);
  EXPECT_STREQ(p.values()[3].strings[0], "shared");
  ASSERT_EQ(p.values()[4].n_ints, 3u);
  EXPECT_EQ(p.values()[4].ints[2], 31);
  ASSERT_EQ(p.values()[5].n_strings, 4u);
  EXPECT_STREQ(p.values()[5].strings[0], "a");
  EXPECT_STREQ(p.values()[5].strings[1], "b, c");
  EXPECT_STREQ(p.values()[5].strings[2], " ");
  EXPECT_STREQ(p.values()[5].strings[3], "\n\"x\"");
}

TEST(PolicyParams, EmptyListsAreAllowed) {
  auto pp = parse({{"layers", "[]"}, {"words", ""}});
  const PolicyParams& p = *pp;
  EXPECT_EQ(p.values()[4].n_ints, 0u);
  EXPECT_EQ(p.values()[5].n_strings, 0u);
}

TEST(PolicyParams, UnknownNameListsTheValidOnes) {
  expect_error([] { parse({{"sise", "4"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"policy 'demo'", "unknown parameter 'sise'", "size, ratio, on, scope, layers, words"});
}

TEST(PolicyParams, DuplicateIsAnError) {
  expect_error([] { parse({{"size", "4"}, {"size", "5"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"'size' is given twice"});
}

TEST(PolicyParams, WrongTypes) {
  expect_error([] { parse({{"size", "4.5"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"'size' = '4.5'", "expected an integer"});
  expect_error([] { parse({{"size", "abc"}}); }, KVC_ERR_INVALID_ARGUMENT, {"expected an integer"});
  expect_error([] { parse({{"ratio", "half"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"'ratio' = 'half'", "expected a finite number"});
  expect_error([] { parse({{"on", "yes please"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"expected a boolean"});
  expect_error([] { parse({{"layers", "0,x"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"item 'x' is not an integer"});
  expect_error([] { parse({{"words", "\"open"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"not closed"});
}

TEST(PolicyParams, OutOfRangeNamesTheRange) {
  expect_error([] { parse({{"size", "101"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"'size' = '101'", "out of range, allowed [0, 100]"});
  expect_error([] { parse({{"size", "-1"}}); }, KVC_ERR_INVALID_ARGUMENT, {"[0, 100]"});
  expect_error([] { parse({{"ratio", "1.5"}}); }, KVC_ERR_INVALID_ARGUMENT, {"[0, 1]"});
  expect_error([] { parse({{"layers", "0,32"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"item 32 is out of range, allowed [0, 31]"});
}

TEST(PolicyParams, BadChoiceListsTheChoices) {
  expect_error([] { parse({{"scope", "global"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"'scope' = 'global'", "not one of the choices: per_head, shared"});
}

TEST(PolicyParams, NullNameOrValue) {
  expect_error([] { parse({{"size", nullptr}}); }, KVC_ERR_INVALID_ARGUMENT, {"NULL"});
}

TEST(PolicyParams, TypedSettersCheckTypeAndRange) {
  auto p = fresh();
  p->set_int("size", 7);
  p->set_int("ratio", 1);  // an integer for a float parameter is converted
  p->set_bool("on", true);
  const int64_t layers[] = {1, 2};
  p->set_ints("layers", layers, 2);
  const char* words[] = {"a, b", " "};
  p->set_strings("words", words, 2);
  EXPECT_EQ(p->values()[0].i, 7);
  EXPECT_DOUBLE_EQ(p->values()[1].f, 1.0);
  EXPECT_EQ(p->values()[2].i, 1);
  ASSERT_EQ(p->values()[4].n_ints, 2u);
  EXPECT_EQ(p->values()[4].ints[1], 2);
  ASSERT_EQ(p->values()[5].n_strings, 2u);
  EXPECT_STREQ(p->values()[5].strings[0], "a, b");  // no text syntax: commas are data
  EXPECT_TRUE(p->is_set(0));
  EXPECT_FALSE(p->is_set(3));
  const kvc_param_value v = p->value(4);
  EXPECT_EQ(v.type, KVC_PARAM_INT_LIST);
  EXPECT_EQ(v.n_ints, 2u);

  auto q = fresh();
  expect_error([&] { q->set_float("size", 0.5); }, KVC_ERR_INVALID_ARGUMENT,
               {"'size'", "expected an integer, got a float"});
  expect_error([&] { q->set_int("size", 101); }, KVC_ERR_INVALID_ARGUMENT,
               {"'size' = 101", "out of range, allowed [0, 100]"});
  expect_error([&] { q->set_bool("size", true); }, KVC_ERR_INVALID_ARGUMENT,
               {"expected an integer, got a boolean"});
  expect_error([&] { q->set_int("on", 1); }, KVC_ERR_INVALID_ARGUMENT,
               {"expected a boolean, got an integer"});
  const int64_t bad[] = {0, 32};
  expect_error([&] { q->set_ints("layers", bad, 2); }, KVC_ERR_INVALID_ARGUMENT,
               {"item 32 is out of range"});
  expect_error([&] { q->set_strings("layers", words, 2); }, KVC_ERR_INVALID_ARGUMENT,
               {"expected a list of integers, got a list of strings"});
  q->set_int("layers", 3);  // one integer for an int list: a list of one
  ASSERT_EQ(q->values()[4].n_ints, 1u);
  EXPECT_EQ(q->values()[4].ints[0], 3);
}

TEST(PolicyParams, EachParameterIsSetOnce) {
  auto p = fresh();
  p->set_int("size", 7);
  expect_error([&] { p->set_text("size", "8"); }, KVC_ERR_INVALID_ARGUMENT,
               {"'size' is given twice"});
  EXPECT_EQ(p->values()[0].i, 7);
}

}  // namespace
}  // namespace kvc
