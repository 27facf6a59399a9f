# %pre of ruroco: create user/group ruroco before the files are unpacked (server.toml is
# installed root:ruroco 0640).
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u ruroco - "ruroco server" / /usr/sbin/nologin' |
        systemd-sysusers --replace=/usr/lib/sysusers.d/ruroco.conf -
else
    getent group ruroco >/dev/null || groupadd -r ruroco
    getent passwd ruroco >/dev/null ||
        useradd -r -g ruroco -d / -s /sbin/nologin -c "ruroco server" ruroco
fi
exit 0
