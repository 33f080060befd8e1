"""Online serving: TF Serving push artifacts, a local TF Serving-compatible gRPC server, clients, rollout."""
