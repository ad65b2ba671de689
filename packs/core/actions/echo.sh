#!/bin/sh
# core.echo: prints its `message` parameter (delivered as ATTUNE_MESSAGE).
set -eu
printf '%s\n' "${ATTUNE_MESSAGE-Hello, World!}"
