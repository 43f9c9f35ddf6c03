from cub.cli.main import main

main()
