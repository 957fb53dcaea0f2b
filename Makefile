# moor: the README names `make demo` and `make test`; everything else is a helper.
.PHONY: build install test vmtest demo bench clean

build:
	bash scripts/build.sh

install: build
	bash scripts/install.sh

test:
	bash scripts/test.sh

vmtest:
	bash scripts/vmtest.sh

demo:
	bash scripts/demo.sh

bench:
	bash scripts/bench.sh

clean:
	rm -rf bin
