from recsys_matta.cli import main

main()
