"""A Slate API client outside the project: Python's grpcio (BoringSSL),
the client config exactly as `slatectl gen config` writes it, no generated
stubs. Prints the raw VersionResponse as hex for the Rust test to decode.

usage: version.py SLATECONFIG HOST:PORT
"""
import base64
import sys

import grpc
import yaml

config = yaml.safe_load(open(sys.argv[1]))
context = config["contexts"][config["context"]]
pem = lambda field: base64.b64decode(context[field])
credentials = grpc.ssl_channel_credentials(
    root_certificates=pem("ca"), private_key=pem("key"), certificate_chain=pem("crt")
)
with grpc.secure_channel(sys.argv[2], credentials) as channel:
    version = channel.unary_unary(
        "/slate.machine.v1.MachineService/Version",
        request_serializer=lambda message: message,
        response_deserializer=lambda data: data,
    )
    # apid may still be starting: retry until a real answer.
    for attempt in range(50):
        try:
            print(version(b"", timeout=10).hex())
            break
        except grpc.RpcError as e:
            if attempt == 49 or e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            import time
            time.sleep(0.1)
