"""What ties processes to the trainer's life and keeps two of them apart: a child that dies with its parent
(`parent_death`), signals forwarded to a relaunched torchrun and a clean stop on Ctrl-C / SIGTERM (`signals`), and
the output-directory lock (`lock`)."""
