#pragma once

#include <cassert>
#include <utility>
#include <variant>

#include "core/error.hpp"

namespace imgpipe {

//! A value or an Error. Outcomes a caller branches on travel in a Result; exceptions are for programmer errors and
//! start-up failures only. Accessing value() of an error (or error() of a value) is a programmer error.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}        // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { assert(!ok_); return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

inline Status Ok() { return {}; }

}  // namespace imgpipe

//! Returns the error of `expr` (a Result) from the enclosing function, which must return a Result.
#define IMGPIPE_TRY(expr)                         \
  do {                                            \
    auto imgpipe_try_r_ = (expr);                 \
    if (!imgpipe_try_r_.ok()) return imgpipe_try_r_.error(); \
  } while (false)

#define IMGPIPE_CONCAT_INNER_(a, b) a##b
#define IMGPIPE_CONCAT_(a, b) IMGPIPE_CONCAT_INNER_(a, b)
//! `IMGPIPE_ASSIGN_OR_RETURN(auto x, Foo());` declares x from Foo()'s value or returns its error.
#define IMGPIPE_ASSIGN_OR_RETURN(decl, expr)                                  \
  auto IMGPIPE_CONCAT_(imgpipe_r_, __LINE__) = (expr);                        \
  if (!IMGPIPE_CONCAT_(imgpipe_r_, __LINE__).ok())                            \
    return IMGPIPE_CONCAT_(imgpipe_r_, __LINE__).error();                     \
  decl = std::move(IMGPIPE_CONCAT_(imgpipe_r_, __LINE__)).value()
