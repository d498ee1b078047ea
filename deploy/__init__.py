"""Deployment kit: images, compose file, Kubernetes example, and the same topology run locally (deploy/local)."""
