"""Tests of the deployment artifacts in deploy/ (systemd, container, Kubernetes, Terraform)."""
