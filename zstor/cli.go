package zstor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/engine"
	"github.com/qsfs/qsfs/zstor/proto"
)

const usage = `usage: qsfs zstor [-c|--config <toml>] [--log_file <path>] [-d|--debug] <command>

commands (0-stor v2 compatible):
  store -f|--file <file|dir> [-k|--key-path <dir>] [-s|--save-failure]
        [-d|--delete] [-n|--notblocking] [-e|--error-on-failure]
  retrieve -f|--file <path>
  rebuild -f|--file <path> | -k|--key <key>
  check -f|--file <path>      print the stored BLAKE2b-128, nothing if unknown
  monitor                     run the daemon (needs socket in the config)
  test                        check backends and placement
  status                      table of backends (and the daemon's queue)
`

type options struct {
	config     string
	logFile    string
	logFileSet bool
	debug      bool
	help       bool
	cmd        string

	file, keyPath, key                  string
	saveFailure, del, notBlocking, eonf bool
}

// parseArgs parses structopt-style arguments: global flags, a subcommand,
// its flags. Short boolean flags may be combined (-sd).
func parseArgs(args []string) (*options, error) {
	o := &options{config: "zstor_config.toml", logFile: "zstor.log"}
	i := 0
	value := func(name string) (string, error) {
		a := args[i]
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
			return v, nil
		}
		if i+1 >= len(args) {
			return "", fmt.Errorf("flag %s needs a value", name)
		}
		i++
		return args[i], nil
	}
	var err error
	// Global flags.
	for ; i < len(args); i++ {
		a := args[i]
		name, _, _ := strings.Cut(a, "=")
		switch name {
		case "-c", "--config":
			if o.config, err = value(name); err != nil {
				return nil, err
			}
		case "--log_file", "--log-file":
			if o.logFile, err = value(name); err != nil {
				return nil, err
			}
			o.logFileSet = true
		case "-d", "--debug":
			o.debug = true
		case "-h", "--help", "help":
			o.help = true
			return o, nil
		default:
			if strings.HasPrefix(a, "-") {
				return nil, fmt.Errorf("unknown flag %s", a)
			}
			o.cmd = a
		}
		if o.cmd != "" {
			i++
			break
		}
	}
	switch o.cmd {
	case "store", "retrieve", "rebuild", "check", "monitor", "test", "status":
	case "_bench-encode": // hidden: pipeline without upload, for scripts/bench-zstor.sh
	case "":
		return nil, errors.New("missing command")
	default:
		return nil, fmt.Errorf("unknown command %q", o.cmd)
	}
	for ; i < len(args); i++ {
		a := args[i]
		name, _, _ := strings.Cut(a, "=")
		// Expand combined short booleans like -sdn.
		if len(a) > 2 && a[0] == '-' && a[1] != '-' && !strings.Contains(a, "=") {
			expanded := make([]string, 0, len(a)-1)
			for _, c := range a[1:] {
				expanded = append(expanded, "-"+string(c))
			}
			args = append(args[:i], append(expanded, args[i+1:]...)...)
			a, name = args[i], args[i]
		}
		switch {
		case (name == "-f" || name == "--file") && o.cmd != "monitor" && o.cmd != "test" && o.cmd != "status":
			if o.file, err = value(name); err != nil {
				return nil, err
			}
		case (name == "-k" || name == "--key-path") && o.cmd == "store":
			if o.keyPath, err = value(name); err != nil {
				return nil, err
			}
		case (name == "-k" || name == "--key") && o.cmd == "rebuild":
			if o.key, err = value(name); err != nil {
				return nil, err
			}
		case (name == "-s" || name == "--save-failure") && o.cmd == "store":
			o.saveFailure = true
		case (name == "-d" || name == "--delete") && o.cmd == "store":
			o.del = true
		case (name == "-n" || name == "--notblocking") && o.cmd == "store":
			o.notBlocking = true
		case (name == "-e" || name == "--error-on-failure") && o.cmd == "store":
			o.eonf = true
		case name == "-h" || name == "--help":
			o.help = true
		default:
			return nil, fmt.Errorf("unknown argument %q for %s", a, o.cmd)
		}
	}
	switch o.cmd {
	case "store", "retrieve", "check", "_bench-encode":
		if o.file == "" {
			return nil, fmt.Errorf("%s needs -f/--file", o.cmd)
		}
	case "rebuild":
		if (o.file == "") == (o.key == "") {
			return nil, errors.New("rebuild needs exactly one of -f/--file or -k/--key")
		}
	}
	return o, nil
}

func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("zstor config %s: %w", path, err)
	}
	return cfg, nil
}

func run(o *options, log *logrus.Entry) error {
	cfg, err := loadConfig(o.config)
	if err != nil {
		return err
	}
	switch o.cmd {
	case "monitor":
		return runDaemon(o.config, cfg, log)
	case "status":
		return printStatus(os.Stdout, cfg, log)
	case "_bench-encode":
		return benchEncode(os.Stdout, cfg, o.file, log)
	case "test":
		eng, err := engine.New(cfg, log)
		if err != nil {
			return err
		}
		return eng.Test()
	}
	cmds, err := commandsFor(o)
	if err != nil {
		return err
	}
	if cfg.Socket != "" {
		if conn, err := dialDaemon(cfg.Socket); err == nil {
			defer conn.Close()
			for _, c := range cmds {
				resp, err := conn.do(c)
				if err != nil {
					return err
				}
				if err := printResponse(o, resp); err != nil {
					if !o.eonf && o.cmd == "store" && len(cmds) > 1 {
						log.WithError(err).Error("store failed")
						continue
					}
					return err
				}
			}
			return nil
		}
		log.WithField("socket", cfg.Socket).Debug("daemon not reachable, running in-process")
	}
	eng, err := engine.New(cfg, log)
	if err != nil {
		return err
	}
	defer eng.Pool.Close()
	for _, c := range cmds {
		resp := execute(eng, c, log)
		if err := printResponse(o, resp); err != nil {
			if !o.eonf && o.cmd == "store" && len(cmds) > 1 {
				log.WithError(err).Error("store failed")
				continue
			}
			return err
		}
	}
	return nil
}

// commandsFor turns CLI options into protocol commands; a directory store
// becomes one command per regular file (not recursive).
func commandsFor(o *options) ([]*proto.Command, error) {
	switch o.cmd {
	case "store":
		var keyPath *string
		if o.keyPath != "" {
			kp, err := filepath.Abs(o.keyPath)
			if err != nil {
				return nil, err
			}
			keyPath = &kp
		}
		abs, err := filepath.Abs(o.file)
		if err != nil {
			return nil, err
		}
		files := []string{abs}
		if st, err := os.Stat(abs); err == nil && st.IsDir() {
			entries, err := os.ReadDir(abs)
			if err != nil {
				return nil, fmt.Errorf("read dir %s: %w", abs, err)
			}
			files = files[:0]
			for _, e := range entries {
				if e.Type().IsRegular() {
					files = append(files, filepath.Join(abs, e.Name()))
				}
			}
		}
		var cmds []*proto.Command
		for _, f := range files {
			cmds = append(cmds, &proto.Command{Kind: proto.Store, File: f, KeyPath: keyPath, SaveFailure: o.saveFailure, Delete: o.del, Blocking: !o.notBlocking})
		}
		return cmds, nil
	case "retrieve", "check":
		abs, err := filepath.Abs(o.file)
		if err != nil {
			return nil, err
		}
		kind := proto.Retrieve
		if o.cmd == "check" {
			kind = proto.Check
		}
		return []*proto.Command{{Kind: kind, File: abs}}, nil
	case "rebuild":
		c := &proto.Command{Kind: proto.Rebuild}
		if o.file != "" {
			abs, err := filepath.Abs(o.file)
			if err != nil {
				return nil, err
			}
			c.HasFile, c.File = true, abs
		} else {
			k := o.key
			c.Key = &k
		}
		return []*proto.Command{c}, nil
	}
	return nil, fmt.Errorf("command %s has no protocol form", o.cmd)
}

func printResponse(o *options, r *proto.Response) error {
	switch r.Kind {
	case proto.Err:
		return errors.New(r.Err)
	case proto.Checksum:
		fmt.Printf("%x\n", r.Checksum[:])
	}
	return nil
}

// execute runs one command in-process and returns the protocol response.
func execute(eng *engine.Engine, c *proto.Command, log *logrus.Entry) *proto.Response {
	start := time.Now()
	var err error
	switch c.Kind {
	case proto.Store:
		keyDir := ""
		if c.KeyPath != nil {
			keyDir = *c.KeyPath
		}
		var res *engine.StoreResult
		res, err = eng.Store(c.File, keyDir)
		if err == nil && c.Delete {
			if rerr := os.Remove(c.File); rerr != nil {
				log.WithError(rerr).WithField("file", c.File).Warn("delete after store failed")
			}
			// The hook's copy directory goes with its last file: a hook
			// makes all its copies before queueing the first one.
			if dir := filepath.Dir(c.File); strings.HasPrefix(filepath.Base(dir), hookTmpPrefix) {
				os.Remove(dir) // fails while not empty
			}
		}
		if err == nil {
			if !res.Skipped {
				metricStoredBytes.Add(float64(res.Size))
			}
			log.WithFields(logrus.Fields{"file": c.File, "bytes": res.Size, "skipped": res.Skipped, "seconds": time.Since(start).Seconds()}).Info("stored")
		}
		observe(metricStore, err)
	case proto.Retrieve:
		_, err = eng.Retrieve(c.File)
		if err == nil {
			size := int64(0)
			if st, serr := os.Stat(engine.OutputPath(eng.Config(), c.File)); serr == nil {
				size = st.Size()
			}
			metricRetrievedBytes.Add(float64(size))
			log.WithFields(logrus.Fields{"file": c.File, "bytes": size, "seconds": time.Since(start).Seconds()}).Info("retrieved")
		}
		observe(metricRetrieve, err)
	case proto.Rebuild:
		key := ""
		if c.Key != nil {
			key = *c.Key
		}
		file := ""
		if c.HasFile {
			file = c.File
		}
		err = eng.Rebuild(file, key, c.Meta)
		observe(metricRebuild, err)
	case proto.Check:
		var sum *[16]byte
		s, cerr := eng.Check(c.File)
		err = cerr
		observe(metricCheck, err)
		if err == nil && s != nil {
			sum = (*[16]byte)(s)
			return &proto.Response{Kind: proto.Checksum, Checksum: *sum}
		}
	default:
		err = fmt.Errorf("unknown command %d", c.Kind)
	}
	if err != nil {
		if errors.Is(err, engine.ErrNotFound) && c.Kind == proto.Retrieve {
			return &proto.Response{Kind: proto.Err, Err: err.Error() + ": entity not found"}
		}
		return &proto.Response{Kind: proto.Err, Err: err.Error()}
	}
	return &proto.Response{Kind: proto.Success}
}
