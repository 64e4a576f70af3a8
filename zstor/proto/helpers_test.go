package proto

import "github.com/qsfs/qsfs/zstor/config"

func configBackend() config.Backend { return config.Backend{Address: "127.0.0.1:9900"} }
