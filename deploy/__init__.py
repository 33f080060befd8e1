"""Deployment files: what runs the pushed models on real TF Serving (docker, Kubernetes, Istio, a fleet's server)."""
