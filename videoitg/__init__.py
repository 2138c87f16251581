"""VideoITG Serve: the reference grounding model, its formats, and the pieces the engines and servers share."""

__version__ = "0.1.0"
