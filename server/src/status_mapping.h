// The one place where absl::Status becomes grpc::Status. Abseil's canonical
// codes share their numbering with google.rpc.Code, so this is a cast of the
// code plus the message.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace hxemu::server {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace hxemu::server
