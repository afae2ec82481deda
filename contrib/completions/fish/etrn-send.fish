complete -c etrn-send -l nameserver -d 'With --mx: the name server to ask for the MX records, IP[:PORT]; repeat for several. Replaces the configuration\'s dns.nameservers' -r
complete -c etrn-send -s p -l port -d 'TCP port (default 25). Same as SERVER:PORT' -r
complete -c etrn-send -l helo -d 'Name to give in EHLO/HELO (default: the first of `hostnames`, else this host\'s name)' -r
complete -c etrn-send -l timeout -d 'Time limit for connecting and for each reply, in seconds (or 30s, 2m)' -r
complete -c etrn-send -l starttls -d 'Use STARTTLS: `required` (the default when given without a value) fails unless the server offers it and its certificate is trusted; `opportunistic` uses it when offered without checking the certificate; `off` never uses it (the default)' -r
complete -c etrn-send -l auth-user -d 'Authenticate as USER (AUTH PLAIN, else LOGIN). The password comes from --auth-password-file or the ETRN_PASSWORD environment variable, never from the command line. Use --starttls with it so that the password travels encrypted' -r
complete -c etrn-send -l auth-password-file -d 'File whose first line is the password for --auth-user' -r -F
complete -c etrn-send -l retry -d 'Try again up to N times after a connection failure or a temporary (4xx) reply' -r
complete -c etrn-send -l retry-wait -d 'Seconds to wait between tries (or 30s, 2m)' -r
complete -c etrn-send -s C -l config -d 'Configuration file (default /etc/etrnq/etrnq.toml, or $ETRNQ_CONFIG)' -r -F
complete -c etrn-send -l mx -d 'SERVER is a domain: send ETRN to each of its backup MX hosts at once (every MX host but those at its best preference and this host\'s `hostnames`). DOMAIN defaults to it'
complete -c etrn-send -s 4 -d 'Connect over IPv4 only'
complete -c etrn-send -s 6 -d 'Connect over IPv6 only'
complete -c etrn-send -l tls-insecure -d 'Accept any TLS certificate with --starttls (a self-signed server you know)'
complete -c etrn-send -l force -d 'Send ETRN even when the server does not advertise it'
complete -c etrn-send -s v -l verbose -d 'Show the SMTP conversation on standard error'
complete -c etrn-send -s h -l help -d 'Print help (see more with \'--help\')'
complete -c etrn-send -s V -l version -d 'Print version'
