"""The raw HTTP/2 client of the front's gRPC port, for the front's transport tests: it lives in
benchmarks/h2client.py, beside benchmarks/availability.py, its other user."""

from benchmarks.h2client import H2Client as H2Client
from benchmarks.h2client import prefix as prefix
