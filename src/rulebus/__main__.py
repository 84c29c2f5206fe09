from rulebus.cli import main

main(prog_name="rulebus")
