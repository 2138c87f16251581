"""The reference VideoITG model (PyTorch), its sequence layout, weights and token arithmetic. Every engine and
server is checked against it."""
