"""Ingress other than HTTP: bridges that bring messages from other systems onto the bus."""
