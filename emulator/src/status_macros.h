// File: status_macros.h
//
// Debian 12's Abseil (20220623) has no ABSL_RETURN_IF_ERROR /
// ABSL_ASSIGN_OR_RETURN; these two small macros stand in for them inside the
// emulator library. Internal header: not installed, not used by other targets.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// HXEMU_RETURN_IF_ERROR(expr)
//
// Evaluates `expr` (an absl::Status) and returns it from the enclosing
// function if it is not OK.
#define HXEMU_RETURN_IF_ERROR(expr)                                 \
  do {                                                              \
    if (absl::Status hxemu_status_ = (expr); !hxemu_status_.ok()) { \
      return hxemu_status_;                                         \
    }                                                               \
  } while (false)

#define HXEMU_STATUS_MACROS_CONCAT_INNER_(a, b) a##b
#define HXEMU_STATUS_MACROS_CONCAT_(a, b) \
  HXEMU_STATUS_MACROS_CONCAT_INNER_(a, b)

// HXEMU_ASSIGN_OR_RETURN(lhs, expr)
//
// Evaluates `expr` (an absl::StatusOr<T>); returns its status if not OK,
// otherwise moves the value into `lhs` (which may be a declaration).
#define HXEMU_ASSIGN_OR_RETURN(lhs, expr) \
  HXEMU_ASSIGN_OR_RETURN_IMPL_(           \
      HXEMU_STATUS_MACROS_CONCAT_(hxemu_statusor_, __LINE__), lhs, expr)

#define HXEMU_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)  \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()
