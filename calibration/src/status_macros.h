// File: status_macros.h
//
// Debian 12's Abseil (20220623) has no ABSL_RETURN_IF_ERROR /
// ABSL_ASSIGN_OR_RETURN; these stand in for them inside the calibration
// library (the emulator's own copy is internal to the emulator). Internal
// header.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns `expr` (an absl::Status) from the enclosing function if not OK.
#define CAL_RETURN_IF_ERROR(expr)                               \
  do {                                                          \
    if (absl::Status cal_status_ = (expr); !cal_status_.ok()) { \
      return cal_status_;                                       \
    }                                                           \
  } while (false)

#define CAL_CONCAT_INNER_(a, b) a##b
#define CAL_CONCAT_(a, b) CAL_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::StatusOr<T>); returns its status if not OK,
// otherwise moves the value into `lhs` (which may be a declaration).
#define CAL_ASSIGN_OR_RETURN(lhs, expr) \
  CAL_ASSIGN_OR_RETURN_IMPL_(CAL_CONCAT_(cal_statusor_, __LINE__), lhs, expr)

#define CAL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)    \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()
