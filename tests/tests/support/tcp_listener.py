"""A command for tests/tests/client_connect.rs: listen on 127.0.0.1:PORT (argv[1]), accept one
connection, greet, echo one line, then on end of input say how many more bytes came and close.
Stands in for the sshd a real command would open the firewall for; never runs longer than 30 s."""
import socket
import sys

port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(1)
s.settimeout(30)
c, _ = s.accept()
c.settimeout(30)
c.sendall(b"hello from the listener\n")
f = c.makefile("rb")
line = f.readline()
c.sendall(b"echo " + line)
rest = f.read()
c.sendall(b"bye after %d more bytes\n" % len(rest))
c.close()
