"""`--parallel N --sandbox --engine swarm`: a parallel run whose children are Docker Swarm
services on any node, their workspaces and results moving through git."""
