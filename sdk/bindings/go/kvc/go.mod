module github.com/kvc-project/kvc/sdk/bindings/go/kvc

go 1.19
