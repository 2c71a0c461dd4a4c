from mcphub.cli import main

main()
