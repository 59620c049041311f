"""Access to the generated protobuf / gRPC modules with a helpful error."""

try:
    from hxemu.v1 import experiment_pb2, service_pb2, service_pb2_grpc
except ImportError as err:  # pragma: no cover - depends on the build
    raise ImportError(
        "the generated hxemu protobuf modules (hxemu/v1/*_pb2.py) are missing or "
        "broken; generate them with `cmake -S . -B build -G Ninja && cmake --build "
        f"build --target hxemu_python_protos` in the hxemu source tree ({err})"
    ) from err

__all__ = ["experiment_pb2", "service_pb2", "service_pb2_grpc"]
