# %preun of ruroco: on erase ($1 = 0, not on upgrade) stop and disable the units.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now ruroco.socket ruroco.service \
        ruroco-commander.socket ruroco-commander.service >/dev/null 2>&1 || :
fi
exit 0
