from mcphub_servers.github.server import main

main()
