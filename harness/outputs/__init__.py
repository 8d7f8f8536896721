"""What a run leaves for people to read: its folder's files and their names, plots, GIFs, progress lines,
and the names of the keys it logs. No torch: it reads the records a trainer publishes."""
