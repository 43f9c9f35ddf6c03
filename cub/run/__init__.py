"""One run of cub: its machine, its context, and the driver that fires the machine's triggers."""
