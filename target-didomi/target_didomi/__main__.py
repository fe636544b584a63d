from target_didomi.target import cli

cli()
