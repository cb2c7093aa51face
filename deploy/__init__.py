"""Deployment: the one-command demo, Jetson provisioning scripts (deploy/jetson/), bundle rollout."""
