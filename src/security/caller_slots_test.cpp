#include "security/caller_slots.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

TEST(CallerSlotsTest, EachCallerHasItsOwnLimitAndSlotsComeBack) {
  CallerSlots slots(2);
  {
    auto a1 = slots.TryTake("a");
    auto a2 = slots.TryTake("a");
    EXPECT_TRUE(a1);
    EXPECT_TRUE(a2);
    EXPECT_FALSE(slots.TryTake("a")) << "a third upload of one key must be refused";
    EXPECT_TRUE(slots.TryTake("b")) << "another key is not affected";
    EXPECT_EQ(slots.held("a"), 2);
    auto moved = std::move(a1);
    EXPECT_EQ(slots.held("a"), 2) << "moving a slot must not give it back";
  }
  EXPECT_EQ(slots.held("a"), 0);
  EXPECT_EQ(slots.held("b"), 0);
  EXPECT_TRUE(slots.TryTake("a"));
}

}  // namespace
}  // namespace imgpipe
