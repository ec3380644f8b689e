"""stockmax's streaming logic as plain Python: no Flink import here, so every rule is tested on its own.

jobs/ wraps these classes in thin PyFlink functions.
"""
