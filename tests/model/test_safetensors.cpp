// safetensors header validation, each malformed case on its own.
#include <gtest/gtest.h>

#include "model/safetensors.h"
#include "model_test_util.h"

namespace kvc {
namespace {

using test::ScratchDir;
using test::st_raw;

std::string four_floats() { return test::f32_bytes({1.0f, -2.0f, 3.5f, 0.25f}); }

TEST(Safetensors, ReadsFixture) {
  auto f =
      SafetensorsFile::open((test::fixture_dir("neox-par-r25") / "model.safetensors").string());
  const TensorInfo* t = f->find("gpt_neox.layers.1.attention.query_key_value.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, SafeDType::F32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{192, 64}));
  EXPECT_EQ(t->nbytes, 192u * 64u * 4u);
  // The legacy causal-mask buffer is a BOOL tensor: recognised, sized, not rejected here.
  const TensorInfo* mask = f->find("gpt_neox.layers.0.attention.bias");
  ASSERT_NE(mask, nullptr);
  EXPECT_EQ(mask->dtype, SafeDType::BOOL);
  EXPECT_EQ(f->find("nope"), nullptr);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  for (size_t i = 1; i < f->tensors().size(); ++i)
    EXPECT_LE(f->tensors()[i - 1].offset + f->tensors()[i - 1].nbytes, f->tensors()[i].offset);
}

TEST(Safetensors, ValuesAndEmptyTensors) {
  ScratchDir d;
  const std::string header = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                             R"("empty":{"dtype":"BF16","shape":[0,3],"data_offsets":[16,16]},)"
                             R"("s":{"dtype":"I64","shape":[],"data_offsets":[16,24]}})";
  test::write_file(d / "x.safetensors", st_raw(header, four_floats() + std::string(8, '\x01')));
  auto f = SafetensorsFile::open((d / "x.safetensors").string());
  ASSERT_EQ(f->tensors().size(), 3u);
  const TensorInfo* a = f->find("a");
  ASSERT_NE(a, nullptr);
  float v[4];
  std::memcpy(v, a->data, 16);
  EXPECT_EQ(v[2], 3.5f);
  EXPECT_EQ(f->find("empty")->nbytes, 0u);
  EXPECT_EQ(f->find("s")->numel(), 1);
  EXPECT_EQ(f->find("s")->dtype, SafeDType::I64);
}

// ---- bad input ------------------------------------------------------------------------------

TEST(SafetensorsBadInput, MissingFile) {
  ScratchDir d;
  const std::string p = (d / "absent.safetensors").string();
  EXPECT_KVC_ERROR(SafetensorsFile::open(p), KVC_ERR_IO, p);
}

TEST(SafetensorsBadInput, ShorterThanLengthField) {
  ScratchDir d;
  test::write_file(d / "x.safetensors", "abc");
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT,
                   "x.safetensors", "3 bytes");
}

TEST(SafetensorsBadInput, TruncatedHeader) {
  // The length field promises more header than the file holds.
  ScratchDir d;
  std::string raw =
      st_raw(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", four_floats());
  raw.resize(30);
  test::write_file(d / "x.safetensors", raw);
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT,
                   "x.safetensors", "header length", "exceeds the file");
}

TEST(SafetensorsBadInput, HugeHeaderLength) {
  ScratchDir d;
  std::string raw(16, '\xff');
  test::write_file(d / "x.safetensors", raw);
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT,
                   "x.safetensors", "header length");
}

TEST(SafetensorsBadInput, HeaderNotJson) {
  ScratchDir d;
  test::write_file(d / "x.safetensors", st_raw("{\"a\": {\"dtype\": ", four_floats()));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT,
                   "x.safetensors", "not valid JSON");
}

TEST(SafetensorsBadInput, HeaderNotAnObject) {
  ScratchDir d;
  test::write_file(d / "x.safetensors", st_raw("[1,2,3]", ""));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT,
                   "x.safetensors", "array");
}

TEST(SafetensorsBadInput, OffsetsOutsideFile) {
  ScratchDir d;
  test::write_file(
      d / "x.safetensors",
      st_raw(R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", four_floats()));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT,
                   "x.safetensors", "'w'", "[0, 32]", "outside the data area of 16 bytes");
}

TEST(SafetensorsBadInput, OffsetsDisagreeWithShape) {
  ScratchDir d;
  test::write_file(
      d / "x.safetensors",
      st_raw(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", four_floats()));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT,
                   "x.safetensors", "'w'", "16 bytes", "needs 12");
}

TEST(SafetensorsBadInput, BeginAfterEnd) {
  ScratchDir d;
  test::write_file(
      d / "x.safetensors",
      st_raw(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", four_floats()));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT, "'w'",
                   "begin > end");
}

TEST(SafetensorsBadInput, OverlappingOffsets) {
  ScratchDir d;
  test::write_file(d / "x.safetensors",
                   st_raw(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                          four_floats()));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT,
                   "x.safetensors", "'a'", "'b'", "overlap");
}

TEST(SafetensorsBadInput, UnknownDtype) {
  ScratchDir d;
  test::write_file(
      d / "x.safetensors",
      st_raw(R"({"w":{"dtype":"Q4_K","shape":[16],"data_offsets":[0,16]}})", four_floats()));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_UNSUPPORTED,
                   "x.safetensors", "'w'", "Q4_K");
}

TEST(SafetensorsBadInput, NegativeOrFractionalShape) {
  ScratchDir d;
  test::write_file(
      d / "x.safetensors",
      st_raw(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", four_floats()));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT, "'w'",
                   "shape");
  test::write_file(
      d / "y.safetensors",
      st_raw(R"({"w":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}})", four_floats()));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "y.safetensors").string()), KVC_ERR_FORMAT, "'w'",
                   "shape");
}

TEST(SafetensorsBadInput, MissingFields) {
  ScratchDir d;
  test::write_file(d / "x.safetensors",
                   st_raw(R"({"w":{"dtype":"F32","shape":[4]}})", four_floats()));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT, "'w'",
                   "data_offsets");
  test::write_file(d / "y.safetensors",
                   st_raw(R"({"w":{"shape":[4],"data_offsets":[0,16]}})", four_floats()));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "y.safetensors").string()), KVC_ERR_FORMAT, "'w'",
                   "dtype");
}

TEST(SafetensorsBadInput, MetadataNotStrings) {
  ScratchDir d;
  test::write_file(d / "x.safetensors", st_raw(R"({"__metadata__":{"n":3}})", ""));
  EXPECT_KVC_ERROR(SafetensorsFile::open((d / "x.safetensors").string()), KVC_ERR_FORMAT,
                   "__metadata__", "'n'");
}

}  // namespace
}  // namespace kvc
