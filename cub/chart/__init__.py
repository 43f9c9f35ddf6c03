"""The run's state chart: its definition as data, its checks, and its renderings."""
