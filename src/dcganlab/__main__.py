from dcganlab.cli import main

main()
