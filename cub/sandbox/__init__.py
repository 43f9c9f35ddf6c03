"""The Docker image that sandboxed runs (`cub run --sandbox`) start their container from."""
