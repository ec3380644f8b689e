"""PyFlink's Python boot for loopback mode (the local default), without importing Apache Beam.

In loopback mode the Python steps run in the client process. The JVM still starts a Python process,
`pyflink.fn_execution.beam.beam_boot`, only to send the client's worker pool one gRPC request: start a
worker. beam_boot imports apache_beam for that request's protobuf types, and that import alone took ~1 s
of every local job's start-up, on its critical path (the tasks wait for the worker). This module sends the
same request with grpc and protobuf only, the two message types declared below from Beam's
beam_fn_api.proto (names and field numbers; tests/test_job_adapter.py checks them against Beam's own
classes). flink_env.local_configuration makes the JVM start this instead of beam_boot (python_boot_launcher); any
other use of the interpreter goes to the interpreter itself.

Run as: python -m stockmax.loopback_boot --id=ID --provision_endpoint=HOST:PORT [--semi_persist_dir=DIR]
(beam_boot's arguments), with PYTHON_LOOPBACK_SERVER_ADDRESS set (as the JVM sets it in loopback mode).
"""

from __future__ import annotations

import argparse
import os
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

START_WORKER = "/org.apache.beam.model.fn_execution.v1.BeamFnExternalWorkerPool/StartWorker"


def _message_types():
    """(StartWorkerRequest, StartWorkerResponse): the fields of Beam's that the loopback request uses."""
    field = descriptor_pb2.FieldDescriptorProto
    string, message = field.TYPE_STRING, field.TYPE_MESSAGE
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    proto = descriptor_pb2.FileDescriptorProto(name="stockmax_loopback_boot.proto", package="loopback", syntax="proto3")
    proto.message_type.add(name="ApiServiceDescriptor").field.add(name="url", number=1, type=string, label=optional)
    request = proto.message_type.add(name="StartWorkerRequest")
    request.field.add(name="worker_id", number=1, type=string, label=optional)
    request.field.add(name="provision_endpoint", number=5, type=message, label=optional,
                      type_name=".loopback.ApiServiceDescriptor")
    request.field.add(name="params", number=10, type=message, label=repeated,
                      type_name=".loopback.StartWorkerRequest.ParamsEntry")
    entry = request.nested_type.add(name="ParamsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=string, label=optional)
    entry.field.add(name="value", number=2, type=string, label=optional)
    proto.message_type.add(name="StartWorkerResponse").field.add(name="error", number=1, type=string, label=optional)
    pool = descriptor_pool.DescriptorPool()  # private: Beam's own types may live in the default pool
    pool.Add(proto)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"loopback.{name}"))
                 for name in ("StartWorkerRequest", "StartWorkerResponse"))


StartWorkerRequest, StartWorkerResponse = _message_types()


def start_worker_request(worker_id: str, provision_endpoint: str, semi_persist_dir: str, environ: dict[str, str]):
    """What beam_boot sends in loopback mode: the worker's id, where to get its provision info, and this
    process's environment (the worker pool applies it)."""
    return StartWorkerRequest(worker_id=worker_id, provision_endpoint={"url": provision_endpoint},
                        params={**environ, "SEMI_PERSISTENT_DIRECTORY": semi_persist_dir})


def main(argv: list[str] | None = None) -> None:
    import grpc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id", required=True)
    parser.add_argument("--provision_endpoint", required=True)
    parser.add_argument("--semi_persist_dir", default="/tmp")
    args = parser.parse_known_args(argv)[0]
    address = os.environ.get("PYTHON_LOOPBACK_SERVER_ADDRESS")
    if not address:
        sys.exit("loopback_boot: PYTHON_LOOPBACK_SERVER_ADDRESS is not set (only loopback mode starts this)")
    request = start_worker_request(args.id, args.provision_endpoint, args.semi_persist_dir, dict(os.environ))
    with grpc.insecure_channel(address) as channel:
        start = channel.unary_unary(START_WORKER, request_serializer=StartWorkerRequest.SerializeToString,
                                    response_deserializer=StartWorkerResponse.FromString)
        response = start(request)
    if response.error:
        raise RuntimeError(f"the loopback worker pool could not start a worker: {response.error}")
    print(f"loopback_boot: worker {args.id} started by {address}", flush=True)


if __name__ == "__main__":
    main()
