from vidpipe.cli import main

main(prog_name="vidpipe")
