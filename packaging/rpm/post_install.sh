# %post of ruroco: create the directories, make systemd see the units. Nothing is enabled or
# started on a fresh install (no key is configured yet); an upgrade ($1 > 1) restarts the
# services that were running.
if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create ruroco.conf || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -gt 1 ]; then
        systemctl try-restart ruroco-commander.service ruroco.service >/dev/null 2>&1 || :
    fi
fi
exit 0
