from sparseseg.cli import main

main()
