from nextbuy.cli import main

main()
