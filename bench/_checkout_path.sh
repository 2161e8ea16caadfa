# Sourced by the bench shell scripts that run this checkout with a machine's own Python (nothing installed): a
# temporary view of the checkout as the installed `ofakit` package (ofa_core/ -> ofakit.ofa_core, ...), made of
# symlinks, goes first on PYTHONPATH. Run from the checkout's root.
_view=$(mktemp -d "${TMPDIR:-/tmp}/ofakit-view.XXXXXX") || exit 2
mkdir "$_view/ofakit" || exit 2
for _f in "$PWD"/ofakit/*; do ln -s "$_f" "$_view/ofakit/"; done
for _lib in ofa_core profiler predictors device_profiles; do ln -s "$PWD/$_lib" "$_view/ofakit/$_lib"; done
export PYTHONPATH="$_view${PYTHONPATH:+:$PYTHONPATH}"
trap 'rm -rf "$_view"' EXIT
