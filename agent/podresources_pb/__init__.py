"""Generated protobuf/gRPC modules for the kubelet's pod-resources API v1 (see README.md)."""
