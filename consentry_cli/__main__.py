from consentry_cli.cli import main

main()
