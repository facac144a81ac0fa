from sparseseg.cli.app import main

main()
