#pragma once

#include <compare>
#include <functional>
#include <string>
#include <utility>

namespace imgpipe {

//! A value that cannot be swapped by accident with another of the same representation:
//! `using ImageId = StrongType<std::string, struct ImageIdTag>;`
template <typename T, typename Tag>
class StrongType {
 public:
  StrongType() = default;
  explicit StrongType(T value) : value_(std::move(value)) {}

  const T& value() const { return value_; }
  T& value() { return value_; }

  auto operator<=>(const StrongType&) const = default;

 private:
  T value_{};
};

}  // namespace imgpipe

template <typename T, typename Tag>
struct std::hash<imgpipe::StrongType<T, Tag>> {
  size_t operator()(const imgpipe::StrongType<T, Tag>& v) const { return std::hash<T>{}(v.value()); }
};
