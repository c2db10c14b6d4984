try:
    from prunekit.cli import main
except KeyboardInterrupt:  # Ctrl-C before main() runs: the same quiet exit as inside it
    raise SystemExit(130) from None

raise SystemExit(main())
