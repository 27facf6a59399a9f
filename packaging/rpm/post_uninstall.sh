# %postun of ruroco: make systemd forget the removed units. Configuration, keys and state are
# kept on erase (rpm has no purge; modified config files are saved as .rpmsave): remove
# /etc/ruroco, /var/lib/ruroco and /var/lib/ruroco-commander by hand if you want them gone.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
