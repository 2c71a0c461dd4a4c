from mcphub_servers.time.server import main

main()
